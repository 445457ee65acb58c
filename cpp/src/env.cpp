#include "mettagrid/env.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mettagrid {

BatchedEnv::BatchedEnv(GameSpec spec, int num_envs, uint64_t seed) : seed_(seed) {
  if (num_envs < 1) throw std::invalid_argument("num_envs must be at least 1");
  configs_.push_back(std::make_shared<const Rules>(std::move(spec)));
  games_.reserve(num_envs);
  for (int g = 0; g < num_envs; ++g) games_.emplace_back(configs_[0], g);
  next_episode_.assign(num_envs, 0);
  next_config_.assign(num_envs, 0);
  next_task_.assign(num_envs, 0);
}

std::shared_ptr<const Rules> BatchedEnv::compile(GameSpec spec) const {
  auto rules = std::make_shared<const Rules>(std::move(spec));
  const std::string why = incompatibility(*configs_[0], *rules);
  if (!why.empty()) throw std::invalid_argument("config is incompatible with config 0: " + why);
  return rules;
}

int BatchedEnv::add_config(GameSpec spec) {
  configs_.push_back(compile(std::move(spec)));
  return num_configs() - 1;
}

void BatchedEnv::set_config(int slot, GameSpec spec) {
  if (slot < 0 || slot >= num_configs())
    throw std::out_of_range("config slot " + std::to_string(slot) + " out of range [0, " +
                            std::to_string(num_configs()) + ")");
  if (slot == 0) throw std::invalid_argument("config slot 0 is the batch's base config and cannot be replaced");
  configs_[slot] = compile(std::move(spec));
}

void BatchedEnv::set_next_config(int g, int slot, int64_t task) {
  if (g < 0 || g >= num_envs())
    throw std::out_of_range("game " + std::to_string(g) + " out of range [0, " + std::to_string(num_envs()) + ")");
  if (slot < 0 || slot >= num_configs())
    throw std::out_of_range("config slot " + std::to_string(slot) + " out of range [0, " +
                            std::to_string(num_configs()) + ")");
  next_config_[g] = slot;
  next_task_[g] = task;
}

void BatchedEnv::set_next_episode(int g, int episode) {
  if (g < 0 || g >= num_envs())
    throw std::out_of_range("game " + std::to_string(g) + " out of range [0, " + std::to_string(num_envs()) + ")");
  if (episode < 0) throw std::invalid_argument("episode must be >= 0, got " + std::to_string(episode));
  next_episode_[g] = episode;
}

void BatchedEnv::set_buffers(uint8_t* obs, float* rewards, bool* terminals, bool* truncations) {
  obs_ = obs;
  rewards_ = rewards;
  terminals_ = terminals;
  truncations_ = truncations;
}

void BatchedEnv::reset_game(int g, int episode) {
  const size_t A = num_agents(), row0 = static_cast<size_t>(g) * A;
  games_[g].set_rules(configs_[next_config_[g]], next_config_[g], next_task_[g]);
  games_[g].reset(seed_, episode, obs_ + row0 * num_tokens() * 3);
  next_episode_[g] = episode + 1;
}

void BatchedEnv::reset(bool new_seed, uint64_t seed) {
  if (!obs_) throw std::logic_error("BatchedEnv: buffers not set");
  if (new_seed) seed_ = seed;
  const size_t R = static_cast<size_t>(num_envs()) * num_agents();
  std::fill(rewards_, rewards_ + R, 0.0f);
  std::fill(terminals_, terminals_ + R, false);
  std::fill(truncations_, truncations_ + R, false);
  for (int g = 0; g < num_envs(); ++g) reset_game(g, 0);
}

void BatchedEnv::step(const int32_t* actions, bool auto_reset) {
  if (!obs_) throw std::logic_error("BatchedEnv: buffers not set");
  const int A = num_agents();
  const size_t obs_row = static_cast<size_t>(num_tokens()) * 3;
  for (int g = 0; g < num_envs(); ++g) {
    Game& game = games_[g];
    const size_t row0 = static_cast<size_t>(g) * A;
    float* rew = rewards_ + row0;
    bool* term = terminals_ + row0;
    bool* trunc = truncations_ + row0;
    if (game.done()) {  // finished earlier and never reset: start its next episode instead
      reset_game(g, next_episode_[g]);
      std::fill(rew, rew + A, 0.0f);
      std::fill(term, term + A, false);
      std::fill(trunc, trunc + A, false);
      continue;
    }
    game.step(actions + row0, obs_ + row0 * obs_row, rew);
    const bool done = game.done(), truncated = game.truncated();
    std::fill(term, term + A, done && !truncated);
    std::fill(trunc, trunc + A, done && truncated);
    if (done) {
      finished_.push_back(game.record());
      if (auto_reset) reset_game(g, next_episode_[g]);
    }
  }
}

void BatchedEnv::reset_games(const bool* mask) {
  for (int g = 0; g < num_envs(); ++g)
    if (mask[g]) reset_game(g, next_episode_[g]);
}

std::vector<EpisodeRecord> BatchedEnv::take_episodes() {
  std::vector<EpisodeRecord> out;
  out.swap(finished_);
  return out;
}

}  // namespace mettagrid
