/// Large tables (the compiled policy, the flow table) on transparent huge pages: see
/// `bulkhead_gateway::sys::alloc`.
#[global_allocator]
static GLOBAL: bulkhead_gateway::sys::alloc::HugePageAlloc =
    bulkhead_gateway::sys::alloc::HugePageAlloc;

fn main() -> std::process::ExitCode {
    bulkhead_gateway::cli::main()
}
