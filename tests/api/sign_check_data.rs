//! The `encrypted_data` check of the sign check (chapter 6.1: "Decrypt encrypted_data to
//! verify data validity based on aes_key and aes_iv"; the cipher is not published, so it is
//! `access.cipher`, and how strictly it is held is `access.encrypted_data`). Every vector is
//! made by Python's `cryptography` package (tools/cipher-vectors/encrypt.py), not by cphub.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};
use crate::metrics::{scrape, value};

const GAME: &str = "com.example.game";

/// One `[access.cipher]` setting and the sizes it implies.
struct CipherCase {
    algorithm: &'static str,
    iv_bytes: usize,
    key_bytes: usize,
}

const CIPHERS: [CipherCase; 6] = [
    CipherCase {
        algorithm: "aes-256-gcm",
        iv_bytes: 12,
        key_bytes: 32,
    },
    CipherCase {
        algorithm: "aes-256-gcm",
        iv_bytes: 16,
        key_bytes: 32,
    },
    CipherCase {
        algorithm: "aes-128-gcm",
        iv_bytes: 12,
        key_bytes: 16,
    },
    CipherCase {
        algorithm: "aes-128-gcm",
        iv_bytes: 16,
        key_bytes: 16,
    },
    CipherCase {
        algorithm: "aes-256-cbc",
        iv_bytes: 16,
        key_bytes: 32,
    },
    CipherCase {
        algorithm: "aes-128-cbc",
        iv_bytes: 16,
        key_bytes: 16,
    },
];

impl CipherCase {
    fn config(&self, mode: &str) -> String {
        format!(
            "[access]\nencrypted_data = \"{mode}\"\n\
             [access.cipher]\nalgorithm = \"{}\"\niv_bytes = {}\n",
            self.algorithm, self.iv_bytes
        )
    }
}

/// Runs tools/cipher-vectors/encrypt.py with the venv's Python: the ciphertext of
/// `plaintext` under `key` and `iv`.
async fn python_encrypt(algorithm: &str, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/python-venv creates it from tools/*/requirements.txt",
        python.display()
    );
    let args = [
        root.join("tools/cipher-vectors/encrypt.py")
            .display()
            .to_string(),
        algorithm.to_owned(),
        hex::encode(key),
        hex::encode(iv),
        hex::encode(plaintext),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "encrypt.py failed: {stderr}");
    hex::decode(String::from_utf8_lossy(&output.stdout).trim()).expect("hex ciphertext")
}

fn sign_check(minted: &Value, data: &[u8], iv: &[u8]) -> Value {
    json!({
        "session_id": minted["session_id"],
        "ticket": minted["ticket"],
        "auth_ts": minted["auth_ts"],
        "encrypted_data": STANDARD.encode(data),
        "aes_iv": hex::encode(iv),
    })
}

/// A sign check for `minted` whose data the SDK would send: `encrypt.py`'s ciphertext of
/// two random blocks under the minted key and a fresh IV of `iv_bytes`.
async fn sealed_by_python(minted: &Value, algorithm: &str, iv_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let key = hex::decode(minted["aes_key"].as_str().unwrap()).unwrap();
    let iv: Vec<u8> = (0..iv_bytes).map(|_| rand::random()).collect();
    let plaintext: [u8; 32] = rand::random();
    (python_encrypt(algorithm, &key, &iv, &plaintext).await, iv)
}

/// Flips a bit of the last byte before the final 16: for GCM the ciphertext under the tag;
/// for CBC (32 bytes of plaintext make a full 16-byte padding block) the block before the
/// padding, which turns the padding's last byte into 0x11: never valid PKCS#7.
fn tampered(data: &[u8]) -> Vec<u8> {
    let mut data = data.to_vec();
    let at = data.len() - 17;
    data[at] ^= 0x01;
    data
}

async fn admitted(app: &TestApp, body: &Value, minted: &Value) {
    let res = app.sign_check(body).await;
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["aes_key"], minted["aes_key"], "{answer}");
}

async fn decrypts(app: &TestApp) -> [f64; 3] {
    let samples = scrape(app).await;
    ["ok", "failed", "absent"].map(|result| {
        let series = format!("cphub_sign_check_decrypt_total{{result=\"{result}\"}}");
        value(&samples, &series)
    })
}

async fn enforce_accepts_each_ciphers_real_data_and_refuses_it_tampered(backend: Backend) {
    for case in CIPHERS {
        let what = format!("{} with a {}-byte IV", case.algorithm, case.iv_bytes);
        let app = TestApp::spawn_with(backend, &case.config("enforce")).await;
        app.idle_phones(&["p-1"]).await;
        let minted = app
            .mint_ok(&json!({"app_id": GAME, "user_id": "u-1"}))
            .await;
        let key = hex::decode(minted["aes_key"].as_str().unwrap()).unwrap();
        assert_eq!(key.len(), case.key_bytes, "{what}: minted key size");
        let (data, iv) = sealed_by_python(&minted, case.algorithm, case.iv_bytes).await;

        let res = app
            .sign_check(&sign_check(&minted, &tampered(&data), &iv))
            .await;

        assert_error(res, 403, "CPHUB.DECRYPT_FAILED").await;
        admitted(&app, &sign_check(&minted, &data, &iv), &minted).await;
        assert_eq!(decrypts(&app).await, [1.0, 1.0, 0.0], "{what}");
        let short_iv = &iv[..iv.len() - 4];
        let res = app.sign_check(&sign_check(&minted, &data, short_iv)).await;
        assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    }
}

async fn observe_admits_garbage_and_counts_what_it_saw(backend: Backend) {
    let cbc = &CIPHERS[4];
    let app = TestApp::spawn_with(backend, &cbc.config("observe")).await;
    app.idle_phones(&["p-1", "p-2", "p-3", "p-4"]).await;
    assert_eq!(decrypts(&app).await, [0.0, 0.0, 0.0], "exported at 0");
    let mut minted = Vec::new();
    for user in ["u-1", "u-2", "u-3", "u-4"] {
        minted.push(app.mint_ok(&json!({"app_id": GAME, "user_id": user})).await);
    }
    let (data, iv) = sealed_by_python(&minted[0], cbc.algorithm, cbc.iv_bytes).await;
    // Not a whole number of AES blocks, so CBC can never decrypt it: 48 random bytes pass
    // CBC's padding check about once in 256 runs, and the count would then say `ok`.
    let garbage: [u8; 47] = rand::random();
    let undecodable = json!({
        "session_id": minted[2]["session_id"], "ticket": minted[2]["ticket"],
        "auth_ts": minted[2]["auth_ts"], "encrypted_data": "%%%", "aes_iv": "zz",
    });
    let absent = json!({
        "session_id": minted[3]["session_id"], "ticket": minted[3]["ticket"],
        "auth_ts": minted[3]["auth_ts"],
    });

    admitted(&app, &sign_check(&minted[0], &data, &iv), &minted[0]).await;
    admitted(
        &app,
        &sign_check(&minted[1], &tampered(&garbage), &iv),
        &minted[1],
    )
    .await;
    admitted(&app, &undecodable, &minted[2]).await;
    admitted(&app, &absent, &minted[3]).await;

    assert_eq!(decrypts(&app).await, [1.0, 2.0, 1.0]);
}

async fn off_neither_decodes_nor_counts(backend: Backend) {
    let app = TestApp::spawn_with(backend, &CIPHERS[0].config("off")).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app
        .mint_ok(&json!({"app_id": GAME, "user_id": "u-1"}))
        .await;
    let garbage = json!({
        "session_id": minted["session_id"], "ticket": minted["ticket"],
        "auth_ts": minted["auth_ts"], "encrypted_data": "%%%", "aes_iv": "zz",
    });

    admitted(&app, &garbage, &minted).await;

    assert_eq!(decrypts(&app).await, [0.0, 0.0, 0.0]);
    let samples = scrape(&app).await;
    assert_eq!(
        value(&samples, r#"cphub_sign_checks_total{result="ok"}"#),
        1.0
    );
}

backend_tests!(
    enforce_accepts_each_ciphers_real_data_and_refuses_it_tampered,
    observe_admits_garbage_and_counts_what_it_saw,
    off_neither_decodes_nor_counts,
);
