"""Access commands of the security-incident procedure (docs/security.md), over the gateway's admin API:

    adp disable-user USER_ID [--enable]   # isolate: every key of the user stops, its live sessions end
    adp revoke-user-keys USER_ID          # revoke every key of the user (each one's live sessions end)
    adp rotate-bootstrap-key              # a new admin key into DATA_DIR/bootstrap-api-key, the old one revoked

Each takes --url (ADP_URL) and --key (ADP_API_KEY, else the key in DATA_DIR/bootstrap-api-key).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import httpx

from adp_cli.cli_common import command
from adp_cli.launcher import BOOTSTRAP_KEY_FILE, mask_key
from adp_common.bootstrap import BOOTSTRAP_USER_ID, bootstrap_key_id


def admin_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    path = Path(args.data_dir) / BOOTSTRAP_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(f"no admin key: pass --key, set ADP_API_KEY, or run where {path} exists")


def client(args: argparse.Namespace, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {key}"}, timeout=args.timeout)


def checked(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        raise SystemExit(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:300]}")
    return resp


async def _disable_user(args: argparse.Namespace) -> int:
    async with client(args, admin_key(args)) as c:
        user = checked(await c.patch(f"/api/admin/users/{args.user_id}", json={"disabled": not args.enable})).json()
    print(f"{user['id']}: {'disabled' if user['disabled'] else 'enabled'}")
    return 0


async def _revoke_user_keys(args: argparse.Namespace) -> int:
    async with client(args, admin_key(args)) as c:
        keys = checked(await c.get("/api/admin/keys", params={"userId": args.user_id})).json()["keys"]
        active = [k["id"] for k in keys if k.get("active", True) and not k.get("revokedAt")]
        for key_id in active:
            checked(await c.delete(f"/api/admin/keys/{key_id}"))
            print(f"revoked {key_id}")
    print(f"{len(active)} keys of {args.user_id} revoked")
    return 0


async def _rotate_bootstrap_key(args: argparse.Namespace) -> int:
    old = admin_key(args)
    path = Path(args.data_dir) / BOOTSTRAP_KEY_FILE
    async with client(args, old) as c:
        body = {"name": "bootstrap (rotated)"}
        new = checked(await c.post(f"/api/admin/users/{BOOTSTRAP_USER_ID}/keys", json=body)).json()["key"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new + "\n")
    path.chmod(0o600)
    async with client(args, new) as c:
        resp = await c.delete(f"/api/admin/keys/{bootstrap_key_id(old)}")
        if resp.status_code not in (200, 404):  # 404: the old key was not the configured bootstrap key
            checked(resp)
        old_works = (await c.get("/api/admin/keys", headers={"Authorization": f"Bearer {old}"})).status_code
    print(f"new admin key {mask_key(new)} in {path}; the old key {mask_key(old)} is revoked")
    if old_works != 401:
        print(f"warning: the old key still answers {old_works} (revoke it: adp revoke-user-keys {BOOTSTRAP_USER_ID})")
    print("restart the gateways with the new key (adp up reads the file; elsewhere set ADP_BOOTSTRAP_API_KEY)")
    return 0


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("ADP_URL", "http://127.0.0.1:8080"), help="gateway [ADP_URL]")
    p.add_argument("--key", default=os.environ.get("ADP_API_KEY"), help="admin API key [ADP_API_KEY]")
    p.add_argument("--data-dir", default=os.environ.get("ADP_DATA_DIR", ".adp"), help="where bootstrap-api-key is")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("disable-user", help="disable a user (every key stops, live sessions end); --enable undoes")
    p.add_argument("user_id")
    p.add_argument("--enable", action="store_true", help="enable the user again")
    _options(p)
    p.set_defaults(func=command(_disable_user))
    p = sub.add_parser("revoke-user-keys", help="revoke every API key of a user (their live sessions end)")
    p.add_argument("user_id")
    _options(p)
    p.set_defaults(func=command(_revoke_user_keys))
    p = sub.add_parser("rotate-bootstrap-key", help="a new admin key into DATA_DIR/bootstrap-api-key, old one revoked")
    _options(p)
    p.set_defaults(func=command(_rotate_bootstrap_key))
