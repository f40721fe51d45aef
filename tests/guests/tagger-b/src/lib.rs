//! Tags every JSON object with `"tag": "b"`. See `tagger.rs`.

const TAG: &str = "b";

include!("../../tagger-a/src/tagger.rs");
