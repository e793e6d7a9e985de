"""The example pillar as tests use it."""

import copy

from salt_mailha import data
from salt_mailha.data import PACKAGE

REPO = PACKAGE.parent

# pillar.example documents the iRedMail section commented out (the native Postfix/Dovecot path is
# the default); tests of the iRedMail path add exactly that documented section.
IREDMAIL = {"source": "salt://iredmail/iRedMail-1.6.8.tar.gz", "source_hash": "sha256=CHANGE-ME",
            "admin_user": "admin_iredmail", "admin_password": "CHANGE-ME-iredmail-admin",
            "postmaster_password": "CHANGE-ME-postmaster"}


def example_pillar(iredmail=False):
    """A fresh copy of the whole example pillar (``{"mailha": ...}``, every secret file merged)."""
    pillar = data.example_pillar()
    if iredmail:
        pillar["mailha"]["mail"]["iredmail"] = copy.deepcopy(IREDMAIL)
    return pillar
