#!/usr/bin/env python3
"""Encrypts one sign-check `encrypted_data` the way a client SDK could (chapter 6.1 names
no cipher; cphub's `access.cipher` settles it), with Python's `cryptography` package, so
cphub's tests check its decryption against an implementation that is not its own.

    encrypt.py ALGORITHM KEY_HEX IV_HEX PLAINTEXT_HEX

ALGORITHM is aes-128-gcm, aes-256-gcm, aes-128-cbc or aes-256-cbc. Prints the ciphertext in
hex: for GCM the ciphertext followed by the 16-byte tag, for CBC the PKCS#7-padded blocks.
"""

import sys

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def encrypt(algorithm: str, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    bits = {"aes-128": 128, "aes-256": 256}[algorithm[:7]]
    if len(key) * 8 != bits:
        raise SystemExit(f"{algorithm} takes a {bits // 8}-byte key, not {len(key)}")
    if algorithm.endswith("-gcm"):
        return AESGCM(key).encrypt(iv, plaintext, None)
    if algorithm.endswith("-cbc"):
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return encryptor.update(padded) + encryptor.finalize()
    raise SystemExit(f"unknown algorithm {algorithm!r}")


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    algorithm, key, iv, plaintext = sys.argv[1:]
    ciphertext = encrypt(algorithm, bytes.fromhex(key), bytes.fromhex(iv), bytes.fromhex(plaintext))
    print(ciphertext.hex())


if __name__ == "__main__":
    main()
