//! Writes the CRDs of the operator into `crds/` and `charts/waggle/crds/` (or, with `--check`,
//! fails if the committed files differ from what the types generate).

use std::path::Path;
use std::process::ExitCode;

use waggle_operator::crdgen;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: crdgen [--check]  (unknown argument {other:?})");
            return ExitCode::from(2);
        }
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the operator crate lives in the workspace");
    for dir in crdgen::output_dirs(workspace) {
        let result = if check { crdgen::check(&dir) } else { crdgen::write(&dir) };
        match result {
            Ok(paths) => {
                for path in paths {
                    println!("{} {}", if check { "up to date:" } else { "wrote" }, path.display());
                }
            }
            Err(error) => {
                eprintln!("crdgen: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
