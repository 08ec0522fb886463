pub fn run() -> bool { false }
