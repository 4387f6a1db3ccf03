//! The committed CRDs (`crds/` and the chart's copy) must be exactly what the types generate.

mod common;

use waggle_operator::crdgen;

#[test]
fn committed_crds_match_the_types() {
    for dir in crdgen::output_dirs(&common::workspace_dir()) {
        let checked = crdgen::check(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked.len(), 3, "{}", dir.display());
    }
}
