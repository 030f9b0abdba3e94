"""Make the first admin login on a fresh install, with a random password printed and kept in a
file only its owner can read (tasks_app.first_login) until it is changed."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tasks_app import first_login


class Command(BaseCommand):
    help = "Create an 'admin' superuser with a random password if there is no superuser yet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "An admin login exists already. Forgot the password? "
                f"Run: python manage.py changepassword {username}"
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        saved = first_login.save(username, password)
        banner = "=" * 64
        self.stdout.write(banner)
        self.stdout.write(self.style.SUCCESS("Admin login created:"))
        self.stdout.write(f"  username: {username}")
        self.stdout.write(f"  password: {password}")
        self.stdout.write(
            f"Also in {saved} (readable only by you) until the password is changed; "
            "`make run` repeats it at the end of its start-up banner."
        )
        self.stdout.write(banner)
