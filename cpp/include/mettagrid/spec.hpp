// The game description the engine runs: a plain mirror of GameConfig.engine_spec() (envs/config.py),
// and `Rules`, the tables compiled from it once and shared read-only by every game of a batch.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace mettagrid {

using ItemCount = std::pair<int, int>;  // (item id, amount)

struct ObjectSpec {
  std::string name;
  int type_id = 1;
  bool is_wall = true;
  bool swappable = false;
  std::vector<ItemCount> inputs, outputs;
  int max_output = 0, conversion_ticks = 0, cooldown = 0, initial_resource_count = 0, color = 0;
};

struct SharedLimit {
  std::vector<int> items;
  int limit = 0;
};

struct AgentSpec {
  std::vector<int> resource_limits;     // per item
  std::vector<SharedLimit> shared_limits;
  std::vector<int> initial_inventory;   // per item
  std::vector<float> reward_weights;    // per item
  std::vector<float> reward_caps;       // per item, +inf = uncapped
  int freeze_duration = 10;
  float action_failure_penalty = 0.0f;
  int group_id = 0;
};

struct MapSpec {
  std::string kind = "ascii";                  // "ascii" or "arena"
  std::vector<std::vector<int>> grid;          // ascii: object index | -1 empty | -2 agent
  int num_agents = 0, rooms_r = 1, rooms_c = 1, room_size = 1, border = 0, wall_index = -1;  // arena
  std::vector<ItemCount> room_objects;         // arena: (object index, count per room)
};

struct GameSpec {
  int max_steps = 1000;
  bool episode_truncates = false;
  bool random_first_episode_cut = false;
  int obs_width = 11, obs_height = 11, num_tokens = 200, num_items = 0;
  std::vector<std::string> item_names, action_names;
  std::vector<ObjectSpec> objects;
  AgentSpec agent;
  std::vector<ItemCount> attack_cost, attack_defense;
  int num_glyphs = 0;
  MapSpec map;
};

// Observation feature ids and names: the original's table (snapshot R), mirrored by envs/config.py
// FEATURES (tests/test_engine_hardening.py checks that they agree). Ids 4, 12, 13, 15 and 16 are named
// for compatibility and never emitted; inventory of item i is kInventoryBase + i.
namespace feature {
constexpr uint8_t kTypeId = 0, kGroup = 1, kFrozen = 2, kOrientation = 3, kReserved = 4, kConverting = 5,
                  kSwappable = 6, kEpisodeCompletion = 7, kLastAction = 8, kLastActionArg = 9, kLastReward = 10,
                  kGlyph = 11, kVisitationCounts = 12, kTag = 13, kCooldownRemaining = 14, kClipped = 15,
                  kRemainingUses = 16, kInventoryBase = 17;
constexpr const char* kNames[kInventoryBase] = {
    "type_id", "agent:group", "agent:frozen", "agent:orientation", "agent:reserved_for_future_use",
    "converting", "swappable", "episode_completion_pct", "last_action", "last_action_arg", "last_reward",
    "agent:glyph", "agent:visitation_counts", "tag", "cooldown_remaining", "clipped", "remaining_uses"};
}  // namespace feature

// The largest count an agent may hold of one item: inventory tokens carry one byte.
constexpr int kMaxItemCount = 255;

// What a flat action id does.
enum class ActionKind : uint8_t { Noop, Move, PutItems, GetItems, Attack, Rotate, Swap, ChangeGlyph };

struct ObsOffset {
  int dr, dc;
  uint8_t location;  // (row << 4) | col inside the window
};

// Per-agent stat ids, laid out once so that the hot loop indexes a flat float array.
struct StatLayout {
  int num_items = 0, num_actions = 0;
  int gained(int item) const { return item; }
  int lost(int item) const { return num_items + item; }
  int get(int item) const { return 2 * num_items + item; }
  int put(int item) const { return 3 * num_items + item; }
  int stolen(int item) const { return 4 * num_items + item; }
  int success(int action) const { return 5 * num_items + action; }
  int failed(int action) const { return 5 * num_items + num_actions + action; }
  int invalid() const { return 5 * num_items + 2 * num_actions; }
  int frozen_ticks() const { return invalid() + 1; }
  int attack_hit() const { return invalid() + 2; }
  int attack_blocked() const { return invalid() + 3; }
  int attack_steals() const { return invalid() + 4; }
  int size() const { return invalid() + 5; }
};

class ActionHandler;

// Everything derived from the spec once; shared by all games of a batch.
struct Rules {
  explicit Rules(GameSpec spec);
  ~Rules();
  Rules(const Rules&) = delete;
  Rules& operator=(const Rules&) = delete;

  GameSpec spec;
  int num_agents = 0;
  int num_actions = 0;
  std::vector<ActionKind> action_kind;     // per flat action
  std::vector<int> action_arg;             // per flat action: direction, attack index, glyph...
  std::vector<const ActionHandler*> action_handler;  // per flat action
  std::vector<ActionHandler*> handlers;    // owned, one per ActionKind present
  int noop_action = 0;                     // what an invalid id is recorded as
  StatLayout stats;
  std::vector<std::string> stat_names;     // per-agent stat names, indexed by stat id
  std::vector<std::string> game_stat_names;  // objects.<name>..., tokens.written, tokens.dropped
  std::vector<std::string> type_names;     // indexed by type id ("" where unused)
  std::vector<std::vector<int>> item_groups;  // per item: indices into agent.shared_limits
  std::vector<int> reward_items;           // items with a non-zero reward weight
  std::vector<ObsOffset> obs_offsets;      // window cells by Manhattan distance, then row, then column
  int pad = 0;                             // grid padding so windows never leave the array
  uint8_t centre_location = 0;
};

}  // namespace mettagrid
