-- Run once by the postgres image when its data volume is first created
-- (/docker-entrypoint-initdb.d): the demo table pgcast captures.
CREATE TABLE IF NOT EXISTS public.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id int NOT NULL,
    author text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
