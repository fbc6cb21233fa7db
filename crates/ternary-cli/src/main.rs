//! `ternary`: quantize pretrained models to ternary, evaluate them, inspect files.

fn main() {
    println!("ternary: not written yet");
}
