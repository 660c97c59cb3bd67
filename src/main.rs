fn main() {
    std::process::exit(lark::cli::main());
}
