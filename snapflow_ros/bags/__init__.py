"""ROS 2 bags (sqlite3, MCAP) as training data, read with rosbags: no ROS install needed."""
