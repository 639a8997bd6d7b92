//! The benches' peer, Envoy's own sticky split (`envoy/bench-native.yaml`), does what its
//! numbers are read as: users split by the hash of their key at 20%, each one kept on its
//! variant, with no filter at all.

use crate::{bounded, users};
use linnet_e2e::envoy::{Envoy, EnvoyConfig};
use linnet_e2e::http::Request;
use linnet_e2e::served_by;
use linnet_e2e::upstream::Upstream;

#[test]
fn the_native_split_puts_a_fifth_of_users_on_canary_and_keeps_each_there() {
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let mut config = EnvoyConfig::load("envoy/bench-native.yaml").unwrap();
    config.ephemeral_ports();
    config
        .cluster_port("checkout-stable", stable.port())
        .unwrap();
    config
        .cluster_port("checkout-canary", canary.port())
        .unwrap();
    let envoy = Envoy::start(&config).unwrap();
    let mut client = envoy.client();
    let mut variant = |u: &str| {
        let req = Request::get("/")
            .host("checkout.local")
            .header("x-user-id", u.as_bytes());
        served_by(&client.send(&req).unwrap()).unwrap()
    };
    let mut on_canary = 0usize;
    bounded(users(0..2_000), |u| {
        let v = variant(&u);
        assert_eq!(variant(&u), v, "{u} changed variant between requests");
        if v == "canary" {
            on_canary += 1;
        }
    });
    let share = on_canary as f64 / 2_000.0;
    assert!((0.17..=0.23).contains(&share), "canary share {share}");
}
