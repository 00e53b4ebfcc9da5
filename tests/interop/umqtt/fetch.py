"""Fetches umqtt.simple2 from PyPI into DEST (default tests/interop/umqtt/lib).

micropython-umqtt.simple2 is published on PyPI as a MicroPython package
(for upip/mip): a tarball with no setup.py, which pip cannot install. We
take the pinned release from PyPI's file host, check its SHA-256 (from
PyPI's simple index, also pinned here) and unpack the `umqtt` package.
"""
import hashlib
import io
import os
import sys
import tarfile
import urllib.request

VERSION = "2.2.0"
SHA256 = "48fd4da7701b95986293b06d343fbc564ebe7dfa82f5c8c09364c20df755f0e4"
URL = (
    "https://files.pythonhosted.org/packages/11/55/"
    "4e3aa69016568f20b038b9b57a17cca7b9ed72a0ff0a5ef43b41e211e781/"
    f"micropython-umqtt.simple2-{VERSION}.tar.gz"
)

dest = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "lib")
if os.path.exists(os.path.join(dest, "umqtt", "simple2.py")):
    sys.exit(0)
data = urllib.request.urlopen(URL, timeout=60).read()
digest = hashlib.sha256(data).hexdigest()
if digest != SHA256:
    sys.exit(f"umqtt.simple2 {VERSION}: SHA-256 {digest}, expected {SHA256}")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for member in tar.getmembers():
        parts = member.name.split("/")
        if len(parts) == 3 and parts[1] == "umqtt" and parts[2].endswith(".py"):
            target = os.path.join(dest, "umqtt", parts[2])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(tar.extractfile(member).read())
print(f"umqtt.simple2 {VERSION} in {dest}")
