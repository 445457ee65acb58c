// N games stepped together into caller-owned contiguous buffers (game-major rows).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mettagrid/game.hpp"

namespace mettagrid {

class BatchedEnv {
 public:
  BatchedEnv(GameSpec spec, int num_envs, uint64_t seed);

  // Buffers: obs [R, T, 3] uint8, rewards [R] float32, terminals/truncations [R] bool; R = num_envs * num_agents.
  void set_buffers(uint8_t* obs, float* rewards, bool* terminals, bool* truncations);
  // Restarts every game at episode 0 (optionally under a new base seed).
  void reset(bool new_seed, uint64_t seed);
  // Steps every game. A game that finished in an earlier call (auto_reset off, never reset) is reset
  // instead of stepped. With auto_reset, a game that finishes now is reset at once after its
  // episode is recorded; rewards and flags still report the final step.
  void step(const int32_t* actions, bool auto_reset);
  // Resets the games whose mask entry is true (their next episode), writing their first obs.
  void reset_games(const bool* mask);
  // Finished episodes since the last call.
  std::vector<EpisodeRecord> take_episodes();

  int num_envs() const { return static_cast<int>(games_.size()); }
  int num_agents() const { return rules_->num_agents; }
  int num_tokens() const { return rules_->spec.num_tokens; }
  const Rules& rules() const { return *rules_; }
  const Game& game(int g) const { return games_.at(g); }

 private:
  void reset_game(int g, int episode);
  std::shared_ptr<const Rules> rules_;
  std::vector<Game> games_;
  std::vector<int> next_episode_;
  std::vector<EpisodeRecord> finished_;
  uint64_t seed_;
  uint8_t* obs_ = nullptr;
  float* rewards_ = nullptr;
  bool* terminals_ = nullptr;
  bool* truncations_ = nullptr;
};

}  // namespace mettagrid
