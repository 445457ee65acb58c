#include "mettagrid/env.hpp"

#include <algorithm>
#include <stdexcept>

namespace mettagrid {

BatchedEnv::BatchedEnv(GameSpec spec, int num_envs, uint64_t seed)
    : rules_(std::make_shared<const Rules>(std::move(spec))), seed_(seed) {
  if (num_envs < 1) throw std::invalid_argument("num_envs must be at least 1");
  games_.reserve(num_envs);
  for (int g = 0; g < num_envs; ++g) games_.emplace_back(rules_, g);
  next_episode_.assign(num_envs, 0);
}

void BatchedEnv::set_buffers(uint8_t* obs, float* rewards, bool* terminals, bool* truncations) {
  obs_ = obs;
  rewards_ = rewards;
  terminals_ = terminals;
  truncations_ = truncations;
}

void BatchedEnv::reset_game(int g, int episode) {
  const size_t A = num_agents(), row0 = static_cast<size_t>(g) * A;
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
