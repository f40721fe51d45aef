//! Tags every JSON object with `"tag": "a"`. See `tagger.rs`.

const TAG: &str = "a";

include!("../../tagger-a/src/tagger.rs");
