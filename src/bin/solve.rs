//! `solve`: retrieval-augmented solving against an OpenAI-compatible server.
//! Not built yet (tracked as the `solve --rag` issue); the binary exists so the CLI layout is
//! fixed and says so instead of pretending.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("solve {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    eprintln!(
        "error: `solve` is not implemented yet in this version of exemplar; \
         `embed encode` and `embed info` are available"
    );
    std::process::exit(2);
}
