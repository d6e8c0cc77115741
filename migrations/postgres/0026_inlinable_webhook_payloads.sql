-- The outbox's payload functions are declared STABLE, which is what they are, so that
-- PostgreSQL inlines them into the statements that call them.
--
-- `webhook_session_started`, `webhook_session_ended` (0013) and `webhook_ms` were declared
-- IMMUTABLE, but call STABLE functions (`jsonb_build_object`; `extract` of a timestamptz).
-- PostgreSQL inlines an SQL function only when its body calls nothing more volatile than
-- its declaration, so none of the three was inlined: each call of the session trigger's
-- INSERT (0024, a row trigger: one per session started or ended) went through the SQL
-- function executor, which parsed and planned the body again at every call. auto_explain
-- over 10 s of enter/quit events at 32 connections timed that INSERT at 75 µs a row, about
-- a quarter of each writer round (docs/benchmarks.md, "The hot paths, 2026-12-05").
-- Declared STABLE, the bodies are inlined into the trigger's cached plan.
--
-- What they compute is unchanged: the same JSON, the same milliseconds. None of them
-- is used in an index or a generated column, which would need IMMUTABLE.
ALTER FUNCTION webhook_ms(TIMESTAMPTZ) STABLE;
ALTER FUNCTION webhook_session_started(sessions) STABLE;
ALTER FUNCTION webhook_session_ended(sessions) STABLE;
