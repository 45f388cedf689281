//! Which provider serves a model name, and what to try next when it fails.
//! Pure: names in, targets out.

use std::collections::BTreeMap;

use crate::usage::Provider;

/// One place a request can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: Provider,
    /// The model name the provider knows (`gpt-4o`, `anthropic/claude-sonnet-4.5`, `llama3`).
    pub model: String,
}

impl Target {
    /// `openai/gpt-4o`, `openrouter/anthropic/claude-sonnet-4.5`, `local/llama3`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// A model name that cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "unknown model `{0}`: use openai/<model>, openrouter/<vendor>/<model>, local/<model>, or a configured alias"
    )]
    UnknownModel(String),
    #[error("`{0}` names no model")]
    Empty(String),
}

/// Aliases, fallback chains and the attempt limit, from configuration.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub aliases: BTreeMap<String, String>,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Upstream attempts per client request, fallbacks included (at least 1).
    pub max_attempts: usize,
}

impl Routing {
    /// The targets to try, in order: the model itself, then its fallback
    /// chain, without repeats, at most `max_attempts`. `is_openai_model`
    /// says whether a bare name is an OpenAI model.
    pub fn plan(
        &self,
        requested: &str,
        is_openai_model: impl Fn(&str) -> bool,
    ) -> Result<Vec<Target>, RouteError> {
        let first = self.resolve(requested, &is_openai_model)?;
        let mut targets = vec![first.clone()];
        let chain = self
            .fallbacks
            .get(requested)
            .or_else(|| self.fallbacks.get(&first.label()));
        for name in chain.into_iter().flatten() {
            let target = self.resolve(name, &is_openai_model)?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        targets.truncate(self.max_attempts.max(1));
        Ok(targets)
    }

    fn resolve(
        &self,
        requested: &str,
        is_openai_model: &impl Fn(&str) -> bool,
    ) -> Result<Target, RouteError> {
        let name = self
            .aliases
            .get(requested)
            .map_or(requested, String::as_str)
            .trim();
        let target = |provider, model: &str| {
            if model.is_empty() {
                Err(RouteError::Empty(requested.to_owned()))
            } else {
                Ok(Target {
                    provider,
                    model: model.to_owned(),
                })
            }
        };
        if let Some(model) = name.strip_prefix("openrouter/") {
            return target(Provider::OpenRouter, model);
        }
        if let Some(model) = name.strip_prefix("local/") {
            return target(Provider::Local, model);
        }
        if let Some(model) = name.strip_prefix("openai/") {
            return target(Provider::OpenAi, model);
        }
        if is_openai_model(name) {
            return target(Provider::OpenAi, name);
        }
        Err(RouteError::UnknownModel(requested.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Routing {
        Routing {
            aliases: [("fast".to_owned(), "openai/gpt-4o-mini".to_owned())].into(),
            fallbacks: [(
                "openai/gpt-4o".to_owned(),
                vec![
                    "openrouter/openai/gpt-4o".to_owned(),
                    "gpt-4o".to_owned(),
                    "local/llama3".to_owned(),
                ],
            )]
            .into(),
            max_attempts: 3,
        }
    }

    fn openai(name: &str) -> bool {
        name.starts_with("gpt-")
    }

    fn labels(targets: Vec<Target>) -> Vec<String> {
        targets.iter().map(Target::label).collect()
    }

    #[test]
    fn prefixes_and_known_names_pick_the_provider() {
        let cases = [
            (
                "openrouter/anthropic/claude-sonnet-4.5",
                "openrouter/anthropic/claude-sonnet-4.5",
            ),
            ("local/llama3.1:8b", "local/llama3.1:8b"),
            ("openai/o3", "openai/o3"),
            ("gpt-4o-mini", "openai/gpt-4o-mini"),
            ("fast", "openai/gpt-4o-mini"),
        ];
        for (requested, expected) in cases {
            let plan = routing().plan(requested, openai).unwrap();
            assert_eq!(labels(plan), vec![expected.to_owned()], "{requested}");
        }
    }

    #[test]
    fn fallback_chains_are_deduplicated_and_bounded() {
        let plan = routing().plan("gpt-4o", openai).unwrap();
        assert_eq!(
            labels(plan),
            ["openai/gpt-4o", "openrouter/openai/gpt-4o", "local/llama3"]
        );
        let mut short = routing();
        short.max_attempts = 2;
        assert_eq!(short.plan("openai/gpt-4o", openai).unwrap().len(), 2);
    }

    #[test]
    fn unknown_and_empty_names_are_errors() {
        assert_eq!(
            routing().plan("claude-3", openai),
            Err(RouteError::UnknownModel("claude-3".to_owned()))
        );
        assert_eq!(
            routing().plan("local/", openai),
            Err(RouteError::Empty("local/".to_owned()))
        );
    }
}
