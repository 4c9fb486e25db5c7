//! Links libtorch so binaries run without LD_LIBRARY_PATH, and keeps libtorch_cuda in the link
//! so `Device::cuda_if_available()` can see a GPU (the linker drops it otherwise under --as-needed).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
