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

  // Game configs: slot 0 is the constructor's spec. A slot may hold any spec compatible with slot 0's
  // (Rules incompatibility() says what differs otherwise; std::invalid_argument). Replacing a slot leaves
  // games already running its old config untouched until their next reset.
  int add_config(GameSpec spec);                 // returns the new slot
  void set_config(int slot, GameSpec spec);
  // Game g's next reset (reset_games, auto-reset, reset) builds and runs slot `slot`'s config; its
  // episodes then carry `task` (a caller's tag, e.g. a curriculum task id).
  void set_next_config(int g, int slot, int64_t task);
  // Game g's next reset (reset_games, auto-reset; not reset(), which restarts every game at 0) starts
  // episode `episode`: its map and shuffles are those of (seed, g, episode), so a recorded episode can be
  // played again from its replay's seed, game and episode.
  void set_next_episode(int g, int episode);
  uint64_t seed() const { return seed_; }
  int num_configs() const { return static_cast<int>(configs_.size()); }
  const Rules& config(int slot) const { return *configs_.at(slot); }

  int num_envs() const { return static_cast<int>(games_.size()); }
  int num_agents() const { return configs_[0]->num_agents; }
  int num_tokens() const { return configs_[0]->spec.num_tokens; }
  const Rules& rules() const { return *configs_[0]; }  // slot 0 (names shared by every slot: stats, actions)
  const Game& game(int g) const { return games_.at(g); }

 private:
  void reset_game(int g, int episode);
  std::shared_ptr<const Rules> compile(GameSpec spec) const;
  std::vector<std::shared_ptr<const Rules>> configs_;
  std::vector<int> next_config_;
  std::vector<int64_t> next_task_;
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
