//! Runs every golden case in `providers/tests/<provider>/*.yaml` as its own test, so that
//! `cargo test` and `cargo nextest` list, filter and report cases one by one.

use std::path::PathBuf;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use llmux::dsl::{self, golden};

fn main() {
    let args = Arguments::from_args();
    golden::show_objects(true);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("providers");
    let trials = match dsl::load_dir(&dir) {
        Err(errors) => {
            let msg = dsl::format_errors(&errors);
            vec![Trial::test("providers::load", move || {
                Err(Failed::from(msg))
            })]
        }
        Ok(set) => {
            let set = Arc::new(set);
            let mut trials = vec![Trial::test("providers::load", || Ok(()))];
            match golden::discover(&dir.join("tests")) {
                Err(e) => trials.push(Trial::test("providers::discover", move || {
                    Err(Failed::from(e))
                })),
                Ok(cases) => {
                    for case in cases {
                        let set = set.clone();
                        let name = format!("{}::{}", case.provider, case.name);
                        trials.push(Trial::test(name, move || {
                            golden::run_case(&set, &case).map_err(Failed::from)
                        }));
                    }
                }
            }
            trials
        }
    };
    libtest_mimic::run(&args, trials).exit();
}
