//! Cinder's list paging for volumes, snapshots and backups: `sort` (or
//! `sort_key`/`sort_dir`), `limit`, `marker`, `offset`, `with_count`, and the
//! `<collection>_links` next link. Rows are already filtered and scoped;
//! this orders and cuts them, answering bad parameters as Cinder does
//! (invalid sort key or direction, bad limit or offset → 400; a marker that
//! is not in the list → 404).

use std::cmp::Ordering;

use axum::http::Uri;
use serde_json::{json, Value};

use super::error::ApiError;

/// The paging asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Paging {
    /// (key, descending) pairs, most significant first.
    pub sort: Vec<(String, bool)>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Rows after this id.
    pub marker: Option<String>,
    /// Rows skipped first.
    pub offset: usize,
    /// Answer the total count too (3.45).
    pub with_count: bool,
}

fn dir(s: &str) -> Result<bool, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "asc" => Ok(false),
        "desc" => Ok(true),
        _ => Err(ApiError::bad_request(format!("Invalid input received: Unknown sort direction, must be 'desc' or 'asc', not {s:?}."))),
    }
}

impl Paging {
    /// Parses the paging of `query`; `keys` are the sortable fields.
    pub fn parse(query: &[(String, String)], keys: &[&str], mv: (u32, u32)) -> Result<Paging, ApiError> {
        let get = |k: &str| query.iter().rev().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
        let mut sort = Vec::new();
        if let Some(s) = get("sort") {
            if get("sort_key").is_some() || get("sort_dir").is_some() {
                return Err(ApiError::bad_request("Invalid input received: The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter."));
            }
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, d) = part.split_once(':').map_or((part, "desc"), |(k, d)| (k.trim(), d.trim()));
                sort.push((k.to_owned(), dir(d)?));
            }
        } else if let Some(k) = get("sort_key") {
            let descending = get("sort_dir").map_or(Ok(true), dir)?;
            for k in k.split(',').map(str::trim) {
                sort.push((k.to_owned(), descending));
            }
        } else if let Some(d) = get("sort_dir") {
            sort.push(("created_at".to_owned(), dir(d)?));
        }
        for (k, _) in &sort {
            if !keys.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("Invalid input received: Invalid sort key {k}.")));
            }
        }
        if sort.is_empty() {
            sort.push(("created_at".to_owned(), true));
        }
        // Ties broken by id, in the first key's direction, as Cinder's pager does.
        if !sort.iter().any(|(k, _)| k == "id") {
            let d = sort[0].1;
            sort.push(("id".to_owned(), d));
        }
        let limit = match get("limit") {
            None => None,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Ok(_) => return Err(ApiError::bad_request("Invalid input received: limit must be >= 0")),
                Err(_) => return Err(ApiError::bad_request("Invalid input received: limit must be an integer")),
            },
        };
        let offset = match get("offset") {
            None => 0,
            Some(o) => match o.parse::<i64>() {
                Ok(n) if (0..=i64::from(i32::MAX)).contains(&n) => usize::try_from(n).unwrap_or(0),
                _ => return Err(ApiError::bad_request(format!("Invalid input received: Invalid value '{o}' for offset: it must be an integer >= 0"))),
            },
        };
        let with_count = match get("with_count") {
            None => false,
            Some(_) if mv < (3, 45) => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => true,
                "false" | "0" | "no" | "off" | "f" | "n" => false,
                _ => return Err(ApiError::bad_request(format!("Invalid input received: with_count: {v:?} is not a boolean"))),
            },
        };
        Ok(Paging { sort, limit, marker: get("marker").map(str::to_owned), offset, with_count })
    }

    /// Orders `rows` (each with its fields as JSON) and cuts the page.
    /// Returns the page and the total before cutting.
    pub fn apply<T>(&self, mut rows: Vec<(T, Value)>) -> Result<(Vec<T>, usize), ApiError> {
        rows.sort_by(|(_, a), (_, b)| {
            for (k, desc) in &self.sort {
                let o = cmp_json(&a[k.as_str()], &b[k.as_str()]);
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        let total = rows.len();
        let start = match &self.marker {
            None => 0,
            Some(m) => match rows.iter().position(|(_, r)| r["id"].as_str() == Some(m.as_str())) {
                Some(i) => i + 1,
                None => return Err(ApiError { status: 404, message: format!("Marker {m} could not be found.") }),
            },
        };
        let page = rows
            .into_iter()
            .skip(start)
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|(t, _)| t)
            .collect::<Vec<_>>();
        Ok((page, total))
    }

    /// The `<collection>_links` entry for the page after one ending at
    /// `last_id`, when the page was full (so there may be more).
    pub fn next_link(&self, base: &str, uri: &Uri, page_len: usize, last_id: Option<&str>) -> Option<Value> {
        let limit = self.limit?;
        let last = last_id?;
        if page_len < limit || limit == 0 {
            return None;
        }
        let mut q: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("marker="))
            .map(str::to_owned)
            .collect();
        q.push(format!("marker={last}"));
        Some(json!([{ "rel": "next", "href": format!("{base}{}?{}", uri.path(), q.join("&")) }]))
    }
}

fn cmp_json(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// A `metadata` filter as clients send it: a JSON object, or the Python
/// dict literal tempest and the cinder CLI send (`{'k': 'v'}`).
pub fn metadata_filter(v: &str) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let parsed = serde_json::from_str(v).or_else(|_| serde_json::from_str(&v.replace('\'', "\"")));
    parsed.map_err(|_| ApiError::bad_request(format!("Invalid input received: metadata filter {v:?} is not a dictionary of strings")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const KEYS: &[&str] = &["id", "created_at", "size", "name"];

    #[test]
    fn parse_and_errors() {
        let p = Paging::parse(&q(&[("sort", "size:asc,name")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.sort, vec![("size".into(), false), ("name".into(), true), ("id".into(), false)]);
        let p = Paging::parse(&q(&[]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.sort, vec![("created_at".into(), true), ("id".into(), true)]);
        for bad in [&[("sort", "colour:asc")][..], &[("sort_key", "id"), ("sort_dir", "up")], &[("limit", "x")], &[("limit", "-1")], &[("offset", "-3")]] {
            assert_eq!(Paging::parse(&q(bad), KEYS, (3, 0)).unwrap_err().status, 400, "{bad:?}");
        }
        assert!(!Paging::parse(&q(&[("with_count", "true")]), KEYS, (3, 44)).unwrap().with_count);
        assert!(Paging::parse(&q(&[("with_count", "true")]), KEYS, (3, 45)).unwrap().with_count);
    }

    #[test]
    fn pages_and_markers() {
        let rows = |n: usize| (0..n).map(|i| (i, json!({"id": format!("id{i}"), "created_at": format!("t{i}"), "size": i}))).collect::<Vec<_>>();
        let p = Paging::parse(&q(&[("limit", "2"), ("sort", "id:asc")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.apply(rows(5)).unwrap(), (vec![0, 1], 5));
        let p = Paging::parse(&q(&[("limit", "2"), ("sort", "id:asc"), ("marker", "id1")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.apply(rows(5)).unwrap().0, vec![2, 3]);
        let p = Paging::parse(&q(&[("marker", "nope")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.apply(rows(2)).unwrap_err().status, 404);
        let p = Paging::parse(&q(&[("sort", "size:desc"), ("offset", "1")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.apply(rows(3)).unwrap().0, vec![1, 0]);
        let uri: Uri = "/v3/p/volumes/detail?limit=2&marker=id0".parse().unwrap();
        let l = p.next_link("http://h", &uri, 2, Some("id9"));
        assert_eq!(l, None, "no limit, no next link");
        let p = Paging::parse(&q(&[("limit", "2")]), KEYS, (3, 0)).unwrap();
        assert_eq!(p.next_link("http://h", &uri, 2, Some("id9")).unwrap()[0]["href"], "http://h/v3/p/volumes/detail?limit=2&marker=id9");
        assert_eq!(p.next_link("http://h", &uri, 1, Some("id9")), None);
    }

    #[test]
    fn metadata_filters() {
        assert_eq!(metadata_filter("{'Type': 'work'}").unwrap().get("Type").map(String::as_str), Some("work"));
        assert!(metadata_filter("[1]").is_err());
    }
}
