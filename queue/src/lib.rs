//! Job transport: an in-process queue and RabbitMQ
