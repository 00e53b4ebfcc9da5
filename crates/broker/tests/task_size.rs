//! Idle connections must stay cheap (Mosquitto: ~740 bytes each). The
//! connection task's future is the largest per-connection allocation; this
//! guards it against growing back (it was 2.8 KB before its cold parts were
//! boxed).

#[tokio::test]
async fn connection_task_future_stays_small() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let broker = ferrymq_broker::Broker::new(ferrymq_testkit::test_config());
    let endpoint = std::sync::Arc::new(ferrymq_broker::net::listener::Endpoint {
        settings: broker.config.listeners[0].clone(),
        security: broker.security.clone(),
        limit: None,
    });
    let task = ferrymq_broker::net::driver::serve(
        broker,
        stream,
        Some("127.0.0.1:1".parse().unwrap()),
        Default::default(),
        endpoint,
    );
    let size = std::mem::size_of_val(&task);
    assert!(size <= 1280, "connection task future is {size} bytes");
}
