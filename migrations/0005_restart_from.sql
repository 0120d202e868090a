-- `cursor reset`: the time a stream starts again from, once, when its cursor has been cleared.
-- Cleared again by the first page stored after it.
ALTER TABLE streams ADD COLUMN restart_ns INTEGER;
