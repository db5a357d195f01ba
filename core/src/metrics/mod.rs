pub mod win_rate; pub mod length_controlled;
