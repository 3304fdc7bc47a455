fn main() {
    let p = std::env::args().nth(1).unwrap();
    match policy_engine::load_policy_file(std::path::Path::new(&p)) {
        Ok(l) => {
            for w in &l.warnings {
                println!("{w}");
            }
            println!("{:#?}", l.policy.rules.len());
        }
        Err(e) => {
            println!("{e}");
            for w in &e.warnings {
                println!("{w}");
            }
        }
    }
}
