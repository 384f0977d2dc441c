"""Password hashes through libxcrypt (ctypes), verified with the same library."""

import re

import pytest

from workers.provisioning import password


@pytest.mark.parametrize("crypt_id,length", [("6", 10), ("5", 16), ("1", 8), ("6", 1)])
def test_hash_and_verify(crypt_id, length):
    h = password.hash_password("correct horse", crypt_id, length)
    assert re.fullmatch(r"\$%s\$[A-Za-z0-9]{%d}\$[./A-Za-z0-9]+" % (crypt_id, length), h)
    assert password.verify("correct horse", h)
    assert not password.verify("correct horsE", h)


def test_known_sha512_vector():
    # crypt(3) reference vector (glibc/libxcrypt test suite).
    h = password.crypt("Hello world!", "$6$saltstring")
    assert h == ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
                 "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1")


def test_salt_is_random_and_clamped():
    salts = {password.hash_password("x", "6", 10).split("$")[2] for _ in range(5)}
    assert len(salts) == 5
    assert len(password.hash_password("x", "6", 40).split("$")[2]) == 16
    assert len(password.hash_password("x", "1", 40).split("$")[2]) == 8


def test_unicode_password():
    h = password.hash_password("pässwörd ✓", "6", 10)
    assert password.verify("pässwörd ✓", h)


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 600])
def test_refused_passwords_do_not_leak(bad):
    with pytest.raises(password.PasswordError) as e:
        password.hash_password(bad)
    assert bad not in str(e.value)


def test_unknown_crypt_id():
    with pytest.raises(password.PasswordError):
        password.hash_password("x", "2")
