//! The `sluice` command line.

fn main() {
    println!("sluice");
}
