//! leaderboard.csv and the self-contained HTML report
