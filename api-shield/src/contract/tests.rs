//! Contract tests on real public OpenAPI documents (see tests/fixtures/openapi/README.md) and
//! on hostile ones written here.

mod adversarial;
mod fixtures;
mod props;

use std::path::PathBuf;

use super::{ApiConfig, Contract, LoadLimits, Report, Request};

pub(super) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openapi")
        .join(name)
}

pub(super) fn load(name: &str) -> Contract {
    Contract::from_config(ApiConfig::new(fixture(name)), &LoadLimits::default())
        .expect("fixture loads")
}

pub(super) fn inline(yaml: &str) -> Contract {
    Contract::from_bytes(
        yaml.as_bytes(),
        ApiConfig::new("inline.yaml"),
        &LoadLimits::default(),
    )
    .expect("inline loads")
}

pub(super) const JSON: [(&str, &[u8]); 1] = [("Content-Type", b"application/json")];

pub(super) fn get<'c>(c: &'c Contract, path_and_query: &str) -> Report<'c> {
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    c.validate(&Request {
        method: "GET",
        path,
        query,
        headers: &[],
        body: b"",
        declared_length: None,
    })
}

pub(super) fn send<'c>(
    c: &'c Contract,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Report<'c> {
    c.validate(&Request {
        method,
        path,
        query: None,
        headers,
        body,
        declared_length: None,
    })
}

/// (location, name, pointer) of each violation, for compact assertions.
pub(super) fn places(report: &Report<'_>) -> Vec<(String, String, String)> {
    report
        .violations
        .iter()
        .map(|v| {
            (
                format!("{:?}", v.location).to_lowercase(),
                v.name.clone(),
                v.pointer.clone(),
            )
        })
        .collect()
}

pub(super) fn place(location: &str, name: &str, pointer: &str) -> (String, String, String) {
    (location.to_owned(), name.to_owned(), pointer.to_owned())
}
