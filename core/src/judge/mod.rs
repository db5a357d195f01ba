pub mod prompt; pub mod ranking_parser; pub mod swap;
