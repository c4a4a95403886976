"""castellan's own Vault key manager, driven by the castellan interop test.

usage: castellan.py URL TOKEN KV_PATH create         -> prints "<id> <hex value>"
       castellan.py URL TOKEN KV_PATH get <hex id>    -> prints the hex value
"""
import binascii
import sys

from oslo_config import cfg
from castellan.key_manager import vault_key_manager


def main():
    url, token, kv_path, action = sys.argv[1:5]
    conf = cfg.ConfigOpts()
    # Constructing the manager registers its [vault] options, which must
    # exist before they can be set.
    vault_key_manager.VaultKeyManager(conf)
    conf([], project="castellan-interop")
    conf.set_override("vault_url", url, group="vault")
    conf.set_override("root_token_id", token, group="vault")
    conf.set_override("kv_path", kv_path, group="vault")
    # The manager reads its options in __init__: build it with them set.
    km = vault_key_manager.VaultKeyManager(conf)
    if action == "create":
        key_id = km.create_key(None, "AES", 256)
        key = km.get(None, key_id)
        print(key_id, binascii.hexlify(key.get_encoded()).decode())
    elif action == "get":
        key = km.get(None, sys.argv[5])
        assert key.algorithm is not None and key.bit_length == len(key.get_encoded()) * 8
        print(binascii.hexlify(key.get_encoded()).decode())
    else:
        sys.exit("unknown action " + action)


main()
