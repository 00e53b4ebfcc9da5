//! Replays the committed fuzz inputs through the fuzz targets' own oracles,
//! so that `cargo test` covers them without cargo-fuzz or a nightly flag.
//!
//! * `fuzz/corpus-seed/<target>/*`: hand-made seeds. For the decode targets
//!   each is a stream of valid packets, which must decode completely.
//! * `fuzz/regressions/<target>/*`: inputs that once broke an oracle (named
//!   after what broke); they only have to pass the oracle now.

#[path = "../../../fuzz/src/oracle.rs"]
mod oracle;

use std::fs;
use std::path::{Path, PathBuf};

use ferrymq_codec::Protocol;
use oracle::End;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// `(target, file, contents)` for every file under `dir/<target>/`.
fn inputs(dir: &Path) -> Vec<(String, PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(targets) = fs::read_dir(dir) else {
        return out;
    };
    for target in targets {
        let target = target.expect("read fuzz dir").path();
        if !target.is_dir() {
            continue;
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .expect("target directory names are UTF-8")
            .to_owned();
        let mut files: Vec<PathBuf> = fs::read_dir(&target)
            .expect("read target dir")
            .map(|f| f.expect("read target dir").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).expect("read input");
            out.push((name.clone(), file, data));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn protocol_of(target: &str) -> Option<Protocol> {
    match target {
        "decode_v3_1" => Some(Protocol::V3_1),
        "decode_v3_1_1" => Some(Protocol::V3_1_1),
        "decode_v5" => Some(Protocol::V5),
        _ => None,
    }
}

/// Runs one input through its target's oracle; returns the decode result
/// for the decode targets.
fn replay(target: &str, file: &Path, data: &[u8]) -> Option<(usize, End)> {
    if let Some(protocol) = protocol_of(target) {
        let (packets, end) = oracle::decode_stream(data, protocol);
        Some((packets.len(), end))
    } else if target == "topic_filter" {
        oracle::topic(data);
        None
    } else {
        panic!(
            "{}: no fuzz target named {target:?}; add it to this test",
            file.display()
        );
    }
}

#[test]
fn seed_corpus_passes_the_oracles() {
    let seeds = inputs(&fuzz_dir().join("corpus-seed"));
    for target in ["decode_v3_1", "decode_v3_1_1", "decode_v5", "topic_filter"] {
        assert!(
            seeds.iter().any(|(t, _, _)| t == target),
            "no seeds for {target}"
        );
    }
    for (target, file, data) in &seeds {
        if let Some((packets, end)) = replay(target, file, data) {
            assert!(
                packets > 0 && end == End::Incomplete(0),
                "{}: seeds are streams of valid packets, but this one decoded \
                 {packets} packets and ended with {end:?}",
                file.display()
            );
        }
    }
}

#[test]
fn regressions_pass_the_oracles() {
    for (target, file, data) in inputs(&fuzz_dir().join("regressions")) {
        replay(&target, &file, &data);
    }
}
