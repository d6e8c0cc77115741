//! The documentation cannot drift from the repository: every configuration key is documented
//! and every documented key exists, every relative link in README.md and docs/*.md leads to
//! a file (and heading) of the repository, every operator route they name is served, and
//! the README stays a short front door.
//! Plain file reads: no application, no database.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every docs/*.md, as (path relative to the repository, text).
fn pages() -> Vec<(PathBuf, String)> {
    let mut pages = vec![(PathBuf::from("README.md"), read(&repo().join("README.md")))];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("readable docs/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let relative = path.strip_prefix(repo()).unwrap().to_path_buf();
        pages.push((relative, read(&path)));
    }
    pages
}

/// `section.key` of every key in config/default.toml, nested tables flattened
/// (`[cph.auth]` + `ak` = `cph.auth.ak`). Keys that are unset by default appear there
/// commented out (`# public_url = "…"`) and count too.
fn default_toml_keys() -> BTreeSet<String> {
    let text = read(&repo().join("config/default.toml"));
    let mut section: Option<String> = None;
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap().trim();
            section = Some(name.to_owned());
            continue;
        }
        let Some(section) = &section else { continue };
        let candidate = line.strip_prefix('#').map(str::trim_start).unwrap_or(line);
        let Some((key, _)) = candidate.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// The first column of every table row of docs/configuration.md that is one key written
/// `` `section.key` `` (the page's stated convention).
fn documented_keys() -> BTreeSet<String> {
    let text = read(&repo().join("docs/configuration.md"));
    text.lines()
        .filter_map(|line| {
            let cell = line.strip_prefix('|')?.split('|').next()?.trim();
            let key = cell.strip_prefix('`')?.strip_suffix('`')?;
            let key_like = key.contains('.')
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
            key_like.then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn every_configuration_key_is_documented_and_every_documented_key_exists() {
    let defaults = default_toml_keys();
    let documented = documented_keys();
    assert!(
        defaults.len() > 50 && defaults.contains("cph.auth.ak"),
        "the default.toml reader found too little: {defaults:?}"
    );
    let undocumented: Vec<_> = defaults.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&defaults).collect();
    assert!(
        undocumented.is_empty(),
        "keys of config/default.toml missing from the tables of docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys config/default.toml does not have: {unknown:?}"
    );
}

/// Targets of inline Markdown links `[text](target)` and images, outside code blocks and
/// code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop code spans: a `[x](y)` inside backticks is not a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (`#`… lines outside code blocks), with
/// GitHub's `-1`, `-2` suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').replace('`', "");
        let base = anchor(&heading);
        let mut candidate = base.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

/// `path` with `.` and `..` resolved lexically; None when it climbs out of the repository.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<Component> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let mut problems = Vec::new();
    for (page, text) in pages() {
        for forbidden in ["shared/", "DESIGN.md"] {
            if text.contains(forbidden) {
                problems.push(format!(
                    "{}: mentions {forbidden:?}, which a clone does not have",
                    page.display()
                ));
            }
        }
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                Some(page.clone())
            } else {
                normalise(&page.parent().unwrap().join(file))
            };
            let Some(resolved) = resolved else {
                problems.push(format!(
                    "{}: {target} leaves the repository",
                    page.display()
                ));
                continue;
            };
            let absolute = repo().join(&resolved);
            if !absolute.exists() {
                problems.push(format!("{}: {target} does not exist", page.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let is_markdown = resolved.extension().is_some_and(|ext| ext == "md");
                if is_markdown && !anchors(&read(&absolute)).contains(fragment) {
                    problems.push(format!(
                        "{}: {target}: no heading with that anchor",
                        page.display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_is_at_most_ten_thousand_characters() {
    // Bytes, as `wc -c` counts them: never fewer than characters.
    let length = read(&repo().join("README.md")).len();
    assert!(
        length <= 10_000,
        "README.md has {length} bytes; move detail to a page under docs/"
    );
}

#[test]
fn the_anchor_rules_match_github() {
    assert_eq!(
        anchor("Stopping: SIGTERM and draining"),
        "stopping-sigterm-and-draining"
    );
    assert_eq!(anchor("7. Hostile input"), "7-hostile-input");
    assert_eq!(
        anchor("Access verification (sign check)"),
        "access-verification-sign-check"
    );
    assert_eq!(
        links("see [a](docs/a.md#x) and `[b](c)` and [d](https://e)"),
        ["docs/a.md#x", "https://e"]
    );
}

/// A path the docs name under `/api/v1/`, with the method written before it if any.
struct NamedRoute {
    page: PathBuf,
    method: Option<String>,
    path: String,
}

fn named_routes() -> Vec<NamedRoute> {
    const PREFIX: &str = "/api/v1/";
    let mut named = Vec::new();
    for (page, text) in pages() {
        for (at, _) in text.match_indices(PREFIX) {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| c.is_whitespace() || "`)?,\"*|<>'".contains(c))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(['.', ':', ';']).to_owned();
            let before = text[..at].trim_end_matches('`');
            let method = ["GET", "POST", "DELETE", "PUT", "PATCH"]
                .into_iter()
                .find(|m| before.ends_with(&format!("{m} ")));
            if !path.ends_with('…') {
                let method = method.map(str::to_owned);
                named.push(NamedRoute {
                    page: page.clone(),
                    method,
                    path,
                });
            }
        }
    }
    named
}

/// Whether the documented `path` is the route `template`: a `{…}` segment of the route
/// takes any segment (`{id}`, `NAME`, `7`); with `prefix`, `path` may stop short of it.
fn names(path: &str, template: &str, prefix: bool) -> bool {
    let (mut doc, mut route) = (path.split('/'), template.split('/'));
    loop {
        match (doc.next(), route.next()) {
            (None, None) => return true,
            (None, Some(_)) => return prefix,
            (Some(_), None) => return false,
            (Some(d), Some(r)) if d == r || r.starts_with('{') => {}
            _ => return false,
        }
    }
}

/// An operator route the docs name is one cphub serves: with its method, exactly (the
/// runbook sent operators to a `GET /api/v1/webhooks` that was a 404); without, as a
/// route or the start of one (`/api/v1/webhooks` for the webhook routes).
#[test]
fn every_operator_route_the_docs_name_is_served() {
    let routes: Vec<(String, String)> = (cphub::api::endpoints().into_iter())
        .map(|e| {
            (
                e.method.to_string(),
                format!("{}{}", cphub::api::PREFIX, e.path),
            )
        })
        .collect();
    let named = named_routes();
    assert!(
        named.len() > 50,
        "the docs name the routes: {}",
        named.len()
    );
    let unserved: Vec<String> = (named.iter())
        .filter(|n| {
            !routes.iter().any(|(method, template)| match &n.method {
                Some(m) => m == method && names(&n.path, template, false),
                None => names(&n.path, template, true),
            })
        })
        .map(|n| {
            let method = n.method.as_deref().unwrap_or("");
            format!("{}: {method} {}", n.page.display(), n.path)
        })
        .collect();
    assert!(
        unserved.is_empty(),
        "named in the docs, not served: {unserved:#?}"
    );
}
