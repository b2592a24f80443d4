fn main() {
    std::process::exit(mock_kong::cli::main());
}
