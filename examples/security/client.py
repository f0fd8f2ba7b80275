"""Security example, the client side: plays alice, bob and a stranger in turn.

Run:  UNDERTOW_TOKENS=tokens python client.py ADDRESS
(a real client would hold one token, in UNDERTOW_TOKEN or ~/.undertow/config.toml)
"""

import os
import sys
from pathlib import Path

import undertow
from undertow.security import parse_token

address = sys.argv[1]
tokens = {
    parse_token(line)[0]: line
    for line in Path(os.environ["UNDERTOW_TOKENS"]).read_text().split()
    if line and not line.startswith("#")
}

with undertow.connect(address, token=tokens["bob"]) as bob:
    print("bob sees lab:", bob.balance("lab"))
    print("bob moves 5:", bob.transfer("lab", amount=5))
    try:
        bob.transfer("lab", amount=50)
    except undertow.PermissionDenied as exc:  # also a builtin PermissionError
        print("bob moves 50: denied:", exc)
    try:
        bob.reset()
    except PermissionError:
        print("bob resets: denied")
    try:
        bob.run_python(sum, [1, 2, 3])
    except PermissionError:
        print("bob runs python: denied")

with undertow.connect(address, token=tokens["alice"]) as alice:
    print("alice moves 50:", alice.transfer("lab", amount=50))
    print("alice resets:", alice.reset())
    print("alice runs python:", alice.run_python(lambda xs: sum(xs) * 2, [1, 2, 3]))

try:
    undertow.connect(address, token=False, timeout=5)  # no token at all
except undertow.AuthenticationError:
    print("a stranger: refused")
