// One MettaGrid game: grid, objects, agents, converter events, actions, observations, rewards, stats.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mettagrid/rng.hpp"
#include "mettagrid/spec.hpp"

namespace mettagrid {

enum Orientation : uint8_t { North = 0, South = 1, West = 2, East = 3 };

struct Object {
  int32_t type_index = -1;  // index into spec.objects; -1 for agents
  uint8_t type_id = 0;
  uint8_t layer = 1;        // 0 agent, 1 object
  bool is_converter = false;
  bool swappable = false;
  int32_t row = 0, col = 0;
  int32_t agent = -1;       // agent index within the game, -1 otherwise
  // converter state
  bool converting = false, cooling = false;
  int64_t cooldown_end = 0;
};

struct Agent {
  int32_t object = 0;       // object id
  uint8_t orientation = North;
  int32_t frozen = 0;       // action turns still to skip
  uint8_t group = 0, glyph = 0;
  int32_t last_action = 0, last_action_arg = 0;
  bool last_success = false;
  float current_reward = 0.0f, total_reward = 0.0f;
  float score = 0.0f;       // sum_i min(count_i * weight_i, cap_i) after the last reward
  float penalty = 0.0f;     // failure penalties collected this step
  uint8_t reward_token = 0; // the last_reward token: this step's penalties as round(-penalty * 100) mod 256
};

enum class EventKind : uint8_t { ConversionDone, CooldownDone };

struct Event {
  int64_t tick;
  uint64_t seq;
  int32_t object;
  EventKind kind;
};

// One finished episode, handed to Python once.
struct EpisodeRecord {
  int env = 0;
  int episode = 0;
  int config = 0;                  // the batch's config slot the episode ran
  int64_t task = 0;                // the caller's tag for it (BatchedEnv::set_next_config)
  std::shared_ptr<const Rules> rules;  // that config's rules (names of its game stats)
  int64_t steps = 0;
  std::vector<float> rewards;      // [num_agents] episode returns
  std::vector<double> agent_stats;  // [num_stats * num_agents], stat-major (exact counts past 2^24)
  std::vector<double> game_stats;  // [game_stat_names]
};

class Game {
 public:
  Game(std::shared_ptr<const Rules> rules, int index);

  // The rules the next reset() builds and runs under; the caller checks they are compatible (same
  // agents, actions, items and observation shape: Rules::incompatibility).
  void set_rules(std::shared_ptr<const Rules> rules, int config, int64_t task);
  int config() const { return config_; }
  int64_t task() const { return task_; }

  // Builds episode `episode`'s map from (seed, index, episode) and writes the first observations.
  void reset(uint64_t base_seed, int episode, uint8_t* obs);
  // One step: actions [num_agents] in, obs [num_agents, T, 3] and rewards [num_agents] out.
  void step(const int32_t* actions, uint8_t* obs, float* rewards);

  bool done() const { return done_; }
  bool truncated() const { return truncated_; }
  int64_t tick() const { return tick_; }
  int episode() const { return episode_; }
  int height() const { return height_; }
  int width() const { return width_; }
  EpisodeRecord record() const;

  // Read access for snapshots (grid_objects, replays).
  const Rules& rules() const { return *rules_; }
  const std::vector<Object>& objects() const { return objects_; }
  const std::vector<Agent>& agents() const { return agents_; }
  int inventory(int object, int item) const { return inv_[static_cast<size_t>(object) * num_items_ + item]; }

  // Used by the action handlers.
  int32_t agent_at(int r, int c) const { return cells_[cell(r, c)].agent; }
  int32_t object_at(int r, int c) const { return cells_[cell(r, c)].object; }
  bool in_bounds(int r, int c) const { return r >= 0 && c >= 0 && r < height_ && c < width_; }
  void move_agent(int agent, int r, int c);
  void swap_agent_with_object(int agent, int object);
  int32_t& inv(int object, int item) { return inv_[static_cast<size_t>(object) * num_items_ + item]; }
  int agent_room(int agent, int item) const;             // how many more of `item` the agent may hold
  int give_agent(int agent, int item, int amount);        // adds within limits, returns the amount added
  int take_agent(int agent, int item, int amount);        // removes up to amount, returns the amount removed
  void converter_changed(int object) { maybe_start(object); }
  // Adds `amount` (>= 0) to a converter's count of `item`, saturating at INT32_MAX; returns what was added.
  int add_to_converter(int object, int item, int64_t amount);
  double& stat(int agent, int stat_id) { return stats_[static_cast<size_t>(stat_id) * num_agents_ + agent]; }
  Agent& agent(int a) { return agents_[a]; }
  Object& object(int id) { return objects_[id]; }

 private:
  size_t cell(int r, int c) const { return static_cast<size_t>(r + pad_) * stride_ + (c + pad_); }
  int add_object(int type_index, int r, int c);
  int add_agent(int r, int c);
  void build_ascii();
  void build_arena();
  void init_grid(int h, int w);
  void schedule(int64_t at, int object, EventKind kind);
  void maybe_start(int object);
  bool finish_conversion(int object);  // adds the outputs; returns whether it may start again at once
  void fire_events();
  void act(int agent, int32_t action);
  void write_obs(int agent, uint8_t* out);
  float score(int agent) const;

  std::shared_ptr<const Rules> rules_;
  const GameSpec* spec_;  // rules_->spec
  int index_;
  int config_ = 0;
  int64_t task_ = 0;
  int num_items_, num_agents_, num_tokens_;
  Rng rng_;
  int episode_ = 0;
  int64_t tick_ = 0, limit_ = 0;
  bool done_ = false, truncated_ = false;
  int height_ = 0, width_ = 0, pad_ = 0, stride_ = 0;
  struct Cell {
    int32_t agent = -1, object = -1;  // object ids on the agent and object layers, -1 empty
  };
  std::vector<Cell> cells_;         // padded by rules.pad on every side
  std::vector<ptrdiff_t> window_;   // per rules.obs_offsets entry: cell index delta
  std::vector<Object> objects_;
  std::vector<int32_t> inv_;
  std::vector<Agent> agents_;
  std::vector<Event> events_;
  uint64_t event_seq_ = 0;
  std::vector<double> stats_;
  std::vector<double> game_stats_;
  std::vector<int32_t> order_;
  std::vector<int32_t> scratch_;
  int64_t tokens_written_ = 0, tokens_dropped_ = 0;
};

}  // namespace mettagrid
