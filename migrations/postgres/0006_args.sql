-- The `args` a job's `main` is called with: the client's JSON object, as text exactly as sent
-- (large integers and escapes intact); NULL when the request gave none.
ALTER TABLE jobs ADD COLUMN args TEXT;
