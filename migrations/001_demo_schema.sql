-- The demo/test schema: a small social app. Applied to the primary by the integration harness
-- (integration::Stack) and by `stack up`; replicas receive it through replication.
-- Columns cover what a cache key is built from: signed and unsigned ints, strings, a date,
-- a decimal, an enum, a nullable column.
CREATE DATABASE IF NOT EXISTS squeal_demo CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS squeal_demo.users (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  email      VARCHAR(255)    NOT NULL,
  name       VARCHAR(100)    NOT NULL,
  birthday   DATE            NULL,
  bio        TEXT            NULL,
  created_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY users_email (email)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS squeal_demo.posts (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id    BIGINT UNSIGNED NOT NULL,
  title      VARCHAR(200)    NOT NULL,
  body       TEXT            NOT NULL,
  status     ENUM('draft', 'published', 'hidden') NOT NULL DEFAULT 'draft',
  score      DECIMAL(10, 2)  NOT NULL DEFAULT 0.00,
  published_on DATE          NULL,
  created_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY posts_user (user_id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS squeal_demo.follows (
  follower_id BIGINT UNSIGNED NOT NULL,
  followee_id BIGINT UNSIGNED NOT NULL,
  created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (follower_id, followee_id),
  KEY follows_followee (followee_id)
) ENGINE=InnoDB;
