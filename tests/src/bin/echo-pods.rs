//! `echo-pods ADDR...`: one echo server per address, standing in for a Service's pods in the
//! quickstart and the load test. Each answers with JSON naming itself and the request.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addrs: Vec<SocketAddr> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    anyhow::ensure!(!addrs.is_empty(), "usage: echo-pods ADDR...");
    let mut servers = Vec::new();
    for addr in addrs {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("echo pod listening on {addr}");
        servers.push(tokio::spawn(sluice_tests::echo_server(listener)));
    }
    for server in servers {
        server.await?;
    }
    Ok(())
}
