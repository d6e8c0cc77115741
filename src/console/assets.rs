//! The console's static files, embedded in the binary: nothing to install beside it. Each is
//! served under a URL holding its content's hash, so a browser may keep it for a year
//! (`immutable`) and a new build's file has a new URL.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

use super::{ConsoleError, PREFIX};

/// Name, content type, content.
const FILES: [(&str, &str, &[u8]); 2] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    // Vendored, pinned: version and checksum in assets/README.md.
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx.min.js"),
    ),
];

/// The first 16 hex digits of each file's SHA-256, in the order of [`FILES`].
static HASHES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let hash = |content: &[u8]| hex::encode(&Sha256::digest(content)[..8]);
    FILES.iter().map(|(_, _, content)| hash(content)).collect()
});

fn index(name: &str) -> Option<usize> {
    FILES.iter().position(|(n, _, _)| *n == name)
}

/// Where a page links `name` from.
pub(super) fn url(name: &str) -> String {
    let i = index(name).expect("an embedded asset");
    format!("{PREFIX}/assets/{}/{name}", HASHES[i])
}

/// The file, if the hash is its current one (an old page's URL gets a 404, not stale bytes
/// cached for a year).
pub(super) async fn serve(path: web::Path<(String, String)>) -> Result<HttpResponse, ConsoleError> {
    let (hash, name) = path.into_inner();
    let i = index(&name).filter(|&i| HASHES[i] == hash);
    let i = i.ok_or(ConsoleError::NotFound("asset"))?;
    let (_, content_type, content) = FILES[i];
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ))
        .insert_header((header::ETAG, format!("\"{}\"", HASHES[i])))
        .body(content))
}
