"""The first admin login of a fresh install, kept where only its owner can read it.

`ensureadmin` prints the random password once and writes it here (mode 0600) so it does not
scroll away under the access log: `runfactory` repeats it at the end of its start-up banner
until the password is changed, and then removes the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

FILE_NAME = "first-admin-login.txt"


def path() -> Path:
    return Path(settings.VAR_DIR) / FILE_NAME


def save(username: str, password: str) -> Path:
    """Write the login readable by its owner only, also when the file existed already."""
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that was there
        os.write(
            fd,
            f"username: {username}\npassword: {password}\n"
            "# The first admin login; removed once the password is changed.\n".encode(),
        )
    finally:
        os.close(fd)
    return target


def still_valid() -> tuple[str, str] | None:
    """(username, password) while that login still works; removes the file once it does not."""
    target = path()
    try:
        lines = target.read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in lines if ": " in line and line[0] != "#")
    username, password = fields.get("username", ""), fields.get("password", "")
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not password or not user.check_password(password):
        target.unlink(missing_ok=True)
        return None
    return username, password
