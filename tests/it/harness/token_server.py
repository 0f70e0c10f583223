#!/usr/bin/python3
"""A registry token service (the Docker/Distribution token flow) for pier's tests.

Usage: token_server.py KEY CERT ISSUER USERS_JSON LOG PORT_FILE

GET /token?service=S&scope=TYPE:NAME:ACTIONS[&scope=...] answers a JWT signed with KEY (ES256,
the certificate CERT in the `x5c` header, as Distribution's `rootcertbundle` expects) granting:
- to a user of USERS_JSON ({"name": "password"}) authenticated with Basic: every action asked;
- to anyone else (no Authorization): `pull` on repositories under `public/`, nothing more.
Wrong credentials get 401 with a Distribution-style error body. Answers alternate between
`token` and OAuth2's `access_token` (clients must take either). Every request is logged to LOG
as one JSON line (user, scopes, whether credentials came, the outcome), never the password.
Binds 127.0.0.1 on a free port and writes the port to PORT_FILE once it listens.
"""
import base64
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

key_path, cert_path, issuer, users_json, log_path, port_file = sys.argv[1:7]
with open(key_path, "rb") as f:
    KEY = serialization.load_pem_private_key(f.read(), None)
with open(cert_path, "rb") as f:
    CERT = x509.load_pem_x509_certificate(f.read())
X5C = [base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()]
USERS = json.loads(users_json)
LOCK = threading.Lock()
COUNT = [0]


def log(entry):
    with LOCK:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        scopes = query.get("scope", [])
        user = None
        auth = self.headers.get("Authorization")
        if auth is not None:
            name, password = None, None
            if auth.startswith("Basic "):
                try:
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                except Exception:
                    pass
            if name is None or USERS.get(name) != password:
                log({"user": name, "scopes": scopes, "credentials": True, "granted": False})
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]})
            user = name
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            if user is None:
                wanted = [a for a in wanted if a == "pull" and kind == "repository" and name.startswith("public/")]
            if wanted:
                access.append({"type": kind, "name": name, "actions": wanted})
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": user or "",
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        token = jwt.encode(claims, KEY, algorithm="ES256", headers={"x5c": X5C})
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
        key = "token" if n % 2 else "access_token"
        log({"user": user, "scopes": scopes, "credentials": auth is not None, "granted": True, "access": access})
        self.reply(200, {key: token, "expires_in": 300, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(port_file + ".tmp", port_file)
server.serve_forever()
