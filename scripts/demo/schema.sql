-- Demo data for scripts/run.sh: the seed's e-commerce backend in miniature.
-- products (L2, read through as JSON strings), discount rules (L2, versioned, read
-- through as hashes), carts (L3, written by the app). A trigger NOTIFYs strata when a
-- product changes, so the cached copy is deleted at once.

DROP TABLE IF EXISTS products, discount_rules, carts CASCADE;

CREATE TABLE products (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    price_cents integer NOT NULL,
    category    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO products (id, name, price_cents, category)
SELECT i,
       'Product ' || i,
       (i * 137) % 10000 + 99,
       (ARRAY['books', 'garden', 'kitchen', 'toys'])[1 + i % 4]
FROM generate_series(1, 1000) AS i;

CREATE TABLE discount_rules (
    rule_id     text NOT NULL,
    version     integer NOT NULL,
    percent_off integer NOT NULL,
    category    text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (rule_id, version)
);

INSERT INTO discount_rules VALUES
    ('summer', 1, 10, 'garden', true),
    ('summer', 2, 15, 'garden', true),
    ('books4less', 1, 20, 'books', true);

CREATE TABLE carts (
    user_id    integer NOT NULL,
    product_id integer NOT NULL REFERENCES products(id),
    quantity   integer NOT NULL,
    PRIMARY KEY (user_id, product_id)
);

-- Invalidation: strata LISTENs on strata_invalidate (postgres.listen_channel); each
-- payload line is a key to delete from Redis.
CREATE OR REPLACE FUNCTION notify_product_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('strata_invalidate', 'product:details:' || NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER products_invalidate
AFTER UPDATE ON products
FOR EACH ROW EXECUTE FUNCTION notify_product_change();
