// The stores embed the migrations with `sqlx::migrate!`; without this, adding a migration
// file would not rebuild the crate and the binaries would ship the old schema.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
