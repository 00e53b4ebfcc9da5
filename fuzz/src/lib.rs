//! ferrymq's fuzz targets share their oracles through this library. The
//! oracles themselves live in [`oracle`], a file that the codec's
//! `tests/fuzz_corpus_replay.rs` also includes, so the committed corpora
//! run through the very same checks under `cargo test`.

pub mod oracle;
