fn main() {
    std::process::exit(reprise_cli::main());
}
