-- What a provider's own billing says was spent on a day (OpenAI's costs API,
-- with an admin key), to reconcile against the ledger.
ALTER TABLE ai_provider_credits ADD COLUMN billed_nano_usd INTEGER;
ALTER TABLE ai_provider_credits ADD COLUMN billed_day TEXT;
