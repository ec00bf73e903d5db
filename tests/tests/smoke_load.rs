use api_shield::kernel::{loader::Kernel, maps::Capacity};
use aya::programs::{TestRun, TestRunOptions};

#[test]
fn loads_and_runs() {
    let caps = Capacity {
        v4_nodes: 64,
        rules: 1024,
        v6_entries: 1024,
        sketch_width: 1024,
        offenders: 1024,
        auto_blocks: 1024,
    };
    let k = Kernel::load_detached(&caps).expect("load");
    let prog = k.program().expect("prog");
    let mut frame = vec![0u8; 64];
    frame[12] = 0x08;
    frame[13] = 0x06; // ARP
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ..TestRunOptions::new()
        })
        .expect("run");
    assert_eq!(r.return_value, 2);
}
