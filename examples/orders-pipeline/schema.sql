-- The table valid orders go to (the tutorial's JdbcSink writes the same columns).
CREATE TABLE IF NOT EXISTS orders (
    order_id      text PRIMARY KEY,
    customer_id   text NOT NULL,
    total_amount  numeric(12, 2) NOT NULL CHECK (total_amount > 0),
    items         integer NOT NULL,
    ordered_at    timestamptz NOT NULL,
    status        text NOT NULL,
    customer_name text,
    tier          text NOT NULL,
    region        text
);
