fn main() {
    println!("not ready yet");
}
